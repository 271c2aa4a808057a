"""CloudWatch without a collector: what is published (metrics), how it is packed into PutMetricData
calls (packing), the client (session), the dashboard, the cost estimate and the node bundle upload."""
