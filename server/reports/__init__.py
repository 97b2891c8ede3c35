"""What is counted and sent out: exports (CSV, XLSX), the weekly reports and the
dashboards, and their pages."""
