"""Copy MathJax 3 (TeX input, CommonHTML output, its fonts) from the npm package into docs/.

    npm pack mathjax@3.2.2                                   # mathjax-3.2.2.tgz, from the npm registry
    .venv/bin/python scripts/vendor_mathjax.py mathjax-3.2.2.tgz

The site then renders its formulas with no network: mkdocs.yml loads
javascripts/mathjax/tex-chtml-full.js, and MathJax finds its fonts relative to that script
(output/chtml/fonts/woff-v2/). The files are committed (about 1.7 MB, Apache-2.0, LICENSE beside
them) so that `mkdocs build` needs neither npm nor the internet. The tarball's sha256 is checked,
so the committed files are exactly the published package's; tests/test_docs.py checks that no
built page loads a script or stylesheet from an http(s) URL.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "docs" / "javascripts" / "mathjax"
VERSION = "3.2.2"
SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"    # mathjax-3.2.2.tgz
FONTS = "package/es5/output/chtml/fonts/woff-v2/"
WANTED = {"package/es5/tex-chtml-full.js": "tex-chtml-full.js", "package/LICENSE": "LICENSE"}


def vendor(tarball: Path, dest: Path = DEST) -> list:
    """Extract the wanted members of the npm tarball into a fresh `dest`; returns the files written."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"vendor_mathjax: {tarball} has sha256 {digest}, expected mathjax-{VERSION}'s {SHA256}")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    written = []
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if name in WANTED:
                rel = WANTED[name]
            elif name.startswith(FONTS) and name.endswith(".woff"):
                rel = "output/chtml/fonts/woff-v2/" + name[len(FONTS):]
            else:
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            written.append(rel)
    (tmp / "VERSION").write_text(f"mathjax {VERSION} from npm (mathjax-{VERSION}.tgz, sha256 {SHA256});\n"
                                 "written by scripts/vendor_mathjax.py\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)                                  # all or nothing: never a half-copied folder
    return sorted(written)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    files = vendor(Path(args[0]))
    print(f"vendor_mathjax: {len(files)} files into {DEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
