"""The store engines, cut by job (docs/store.md, "Modules"); import them through server/store.py.

This package file imports nothing, so loading one module of the package never loads an engine.
"""
