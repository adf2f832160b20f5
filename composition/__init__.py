"""The one composition root: every process-wide object is built here from the settings, in
dependency order, and handed to what needs it. Nothing below imports it."""
