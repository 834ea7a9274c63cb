"""Prefect flows: one file per deployment. Importing this package sets quiet embedded defaults first
(environment only: PREFECT_HOME is made by the entry points that start a local run)."""

from tailguard.runtime import configure_embedded

configure_embedded(create_home=False)
