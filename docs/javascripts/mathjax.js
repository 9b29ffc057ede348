// MathJax 3 settings for the site. pymdownx.arithmatex (generic mode) wraps the pages' math in
// \( \) and \[ \]; the notebooks' markdown cells keep $ and $$. Material swaps pages without a
// reload (document$), so the math is typeset again on each page change.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
};

if (typeof document$ !== "undefined") {
  document$.subscribe(function () {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.typesetClear();
      MathJax.typesetPromise();
    }
  });
}
