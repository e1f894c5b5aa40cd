//! Nothing to link: the benchmark is the `gateway` bench target.
