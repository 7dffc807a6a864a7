"""numpy references of the networks (ground truth for tests and `convert --report`), never used to transcribe."""
