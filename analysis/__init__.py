"""Results to a tidy DataFrame, optimal alpha per cell, the alpha-f fit and reports (to come)."""
