//! Network-namespace meshes for the demo and the end-to-end tests.
