"""Issue 15: Python functions as tools, and the tool loop."""
