"""The sweep service: command line, plan of cells, stages, Ray adapter, searcher (to come)."""
