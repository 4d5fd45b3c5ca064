"""Human review, engine-free: routing of actions to queues, claim leases, decisions → labels, dashboard
statistics. The service that stores jobs and serves the console is ``streamwarden.jobs.review``."""
