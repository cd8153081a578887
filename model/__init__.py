"""The KFusion of Dual-Domain model, one module per block of the paper (Sec. 3)."""
