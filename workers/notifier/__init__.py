"""The notifier: signed webhooks to merchants."""
