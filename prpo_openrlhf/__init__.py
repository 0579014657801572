"""PRPO for OpenRLHF: process rewards fused with group-relative outcome advantages."""

__version__ = "0.1.0"
