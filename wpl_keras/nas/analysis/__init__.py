"""Analysis of a search: multi-model forgetting metrics and rank correlations."""
