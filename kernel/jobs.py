"""arq's context carries one thing of ours: the process's resources, under `RESOURCES`, put there by the worker's
composition root (`infra/container.py`). Each area reads it through a Protocol of what its own jobs need
(`notifications.tasks.resources`, `services.imports.resources`), so no area imports the wiring."""

RESOURCES = "resources"
