"""What is generated from the catalog: dashboards, alarms, collector configs, docs tables."""
