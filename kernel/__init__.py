"""The neutral kernel every area may import: the models' base (`db`), domain errors (`errors`), the unit of work
(`uow`), sealed secrets (`sealing`) and the audit log (`audit`). It imports nothing else of the project, so no
area cycles through it (the import contracts in pyproject.toml hold this)."""
