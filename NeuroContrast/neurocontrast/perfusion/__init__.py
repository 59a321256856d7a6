"""DSC-MRI perfusion: signal to ΔR2*, AIF/VOF, deconvolution, maps, hypoperfusion and a digital phantom."""
