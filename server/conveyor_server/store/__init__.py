"""Stores: where tasks persist. The only package that touches LMDB."""
