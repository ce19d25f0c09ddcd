"""Architecture diagrams with graphviz."""
