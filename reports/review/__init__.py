"""The review register: audit cadence, baselines, dated reviews, trends and the spreadsheet.

METRICS.md, "Trends and review": nurture programs every 90 days; automation rules 30 days
after they start, then every 90 days; scoring rules every quarter (every six months once
stable) and at once when the MQL acceptance rate falls below 50%; lead-assignment rules
every quarter; content every 90 days, grouped by type.
"""
