"""The search loop: one resumable driver, its schedule, the ENAS and NAO strategies, derive, distribution."""
