"""Dashboard: the Bokeh server app for the operator."""
