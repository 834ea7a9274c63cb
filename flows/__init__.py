"""Prefect flows: one file per deployment. Importing this package sets quiet embedded defaults first."""

from tailguard.runtime import configure_embedded

configure_embedded()
