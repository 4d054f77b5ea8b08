"""Stripe-hosted billing: Checkout, Customer Portal, webhooks, plan gating."""
