"""The training loop every architecture shares, its optimizer/schedule, and device/precision choice."""
