//! Planted structure in the model zoo's networks.
