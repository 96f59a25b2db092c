"""The ground floor: the settings schema and its loading, prompts, records, the store, names and safe YAML.
Imports nothing of twt above it."""
