"""HTML views of the CRM core, one module per area."""
