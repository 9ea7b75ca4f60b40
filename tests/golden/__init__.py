"""Golden end-to-end tests: deminer's outbreak picture of each seed case against its truth."""
