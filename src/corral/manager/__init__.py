"""The container manager: the engine that runs many containers on one host
(records, lifecycle, logs, exec, stats, events) and corrald, which serves it
as the Docker Engine API (docs/dev/manager.md)."""
