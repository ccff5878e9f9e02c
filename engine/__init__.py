"""Engine: simulator, inference, atoms, lattice graph, tracking, events and the pipeline."""
