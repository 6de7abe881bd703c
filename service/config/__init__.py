"""Configuration: the settings (settings.py), the access rules that map terminals to roles (access.py), and
the offices file with its calendars and store chains (offices.py, offices.toml): each read and validated here, then
handed to the composition root as plain values. All three are read the same strict way (schema.py): unknown
keys named with the nearest known one, values in range, every problem at once."""
