"""quantgate evaluators: metric maths (pure) and the measurements the evaluate step records."""
