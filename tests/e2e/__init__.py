"""End-to-end tests: what a person sees in a real JupyterLab, driven by headless Chromium."""
