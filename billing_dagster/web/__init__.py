"""The billing UI as deployed: the Dagster webserver behind cloud.gov's UAA login."""
