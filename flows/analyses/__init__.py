"""The analysis library: each module is one federated analysis and a literate example."""
