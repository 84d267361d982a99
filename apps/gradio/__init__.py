"""The Gradio web app (issue 8)."""
