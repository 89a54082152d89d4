"""Domain writes of the worker app (model registry, jobs), named <entity>_<action>."""
