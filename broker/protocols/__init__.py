"""Pure translations between the broker's events and other protocols' wire formats."""
