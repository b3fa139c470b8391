output "site_configs" {
  description = "Each site's generated configuration for `fedflow site serve` (YAML), keyed by site name."
  value = {
    us-biobank  = module.us_biobank.site_config
    eu-hospital = module.eu_hospital.site_config
    uk-registry = module.uk_registry.site_config
  }
}

output "site_endpoints" {
  description = "Where the orchestrator reaches each site (host:port, mutual TLS)."
  value = {
    us-biobank  = module.us_biobank.site_endpoint
    eu-hospital = module.eu_hospital.site_endpoint
    uk-registry = module.uk_registry.site_endpoint
  }
}

output "orchestrator_egress_cidrs" {
  description = "The orchestrator's fixed egress addresses, admitted by every site."
  value       = module.orchestrator.egress_cidrs
}

output "prefect_ui_url" {
  description = "Prefect UI of the federation (internal load balancer)."
  value       = module.orchestrator.prefect_ui_url
}
