"""Analysis of LoRA updates (Hu et al., 2021, section 7): spectra, subspaces, amplification, labs."""
from minilora.analysis.amplification import amplification, amplification_table
from minilora.analysis.labs import intrinsic_rank_lab, mse_backward, mse_forward, precision_lab
from minilora.analysis.plots import save_intrinsic_rank_lab, save_phi_heatmaps, save_precision_lab, save_spectra
from minilora.analysis.report import analyze_adapter, phi_section, summary_markdown, write_report
from minilora.analysis.spectra import (
    delta_singular_values,
    energy_rank,
    entropy_effective_rank,
    lowrank_svd,
    module_spectra,
)
from minilora.analysis.subspace import (
    delta_basis,
    phi,
    phi_from_bases,
    phi_grid,
    phi_grid_from_bases,
    phi_grid_modules,
    right_singular_basis,
)
from minilora.io.peft import AdapterFactors, read_adapter_factors

__all__ = [
    "AdapterFactors", "read_adapter_factors",
    "analyze_adapter", "phi_section", "summary_markdown", "write_report",
    "amplification", "amplification_table",
    "intrinsic_rank_lab", "precision_lab", "mse_forward", "mse_backward",
    "save_spectra", "save_phi_heatmaps", "save_intrinsic_rank_lab", "save_precision_lab",
    "lowrank_svd", "delta_singular_values", "entropy_effective_rank", "energy_rank",
    "module_spectra",
    "right_singular_basis", "delta_basis", "phi", "phi_from_bases", "phi_grid",
    "phi_grid_from_bases", "phi_grid_modules",
]
