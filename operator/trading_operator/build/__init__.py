"""Pure builders: models and settings in, manifest dicts out. No client, no globals, no clock."""
