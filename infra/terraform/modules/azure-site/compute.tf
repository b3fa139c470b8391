# The site runs on Azure Container Apps in a VNet-integrated environment (Consumption workload
# profile): the site service with TCP ingress open to the orchestrator's CIDR blocks only, the
# Dask scheduler with internal TCP ingress, and the Dask workers with none. Configuration files
# reach the containers as a secret volume: one file per secret, named after the secret.

locals {
  config_dir = "/etc/fedflow"
  state_dir  = "/var/lib/fedflow"
  # File names in the secret volume (Container Apps secret names allow [a-z0-9-] only).
  files = {
    config   = "site-yaml"
    policy   = "policy-yaml"
    site_crt = "tls-site-crt"
    site_key = "tls-site-key"
    ca_crt   = "tls-orchestrator-ca-crt"
  }
  scheduler_host = azurerm_container_app.scheduler.ingress[0].fqdn
}

resource "azurerm_container_app_environment" "site" {
  name                           = "cae-${local.name_prefix}"
  resource_group_name            = azurerm_resource_group.site.name
  location                       = var.location
  log_analytics_workspace_id     = azurerm_log_analytics_workspace.site.id
  infrastructure_subnet_id       = azurerm_subnet.apps.id
  internal_load_balancer_enabled = false
  workload_profile {
    name                  = "Consumption"
    workload_profile_type = "Consumption"
  }
  tags       = local.tags
  depends_on = [azurerm_subnet_network_security_group_association.apps]
}

# --- Dask scheduler -----------------------------------------------------------------------------

resource "azurerm_container_app" "scheduler" {
  name                         = "dask-scheduler"
  container_app_environment_id = azurerm_container_app_environment.site.id
  resource_group_name          = azurerm_resource_group.site.name
  revision_mode                = "Single"
  workload_profile_name        = "Consumption"
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.scheduler.id]
  }
  registry {
    server   = var.registry_server
    identity = azurerm_user_assigned_identity.scheduler.id
  }
  ingress {
    external_enabled = false
    transport        = "tcp"
    target_port      = 8786
    exposed_port     = 8786
    traffic_weight {
      latest_revision = true
      percentage      = 100
    }
  }
  template {
    min_replicas = 1
    max_replicas = 1
    container {
      name   = "scheduler"
      image  = var.image
      cpu    = 0.5
      memory = "1Gi"
      # The dashboard stays off: nothing outside the environment may reach the cluster.
      command = ["dask", "scheduler", "--port", "8786", "--no-dashboard", "--no-show"]
    }
  }
  tags = local.tags
}

# --- Dask workers -------------------------------------------------------------------------------

resource "azurerm_container_app" "worker" {
  name                         = "dask-worker"
  container_app_environment_id = azurerm_container_app_environment.site.id
  resource_group_name          = azurerm_resource_group.site.name
  revision_mode                = "Single"
  workload_profile_name        = "Consumption"
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.worker.id]
  }
  registry {
    server   = var.registry_server
    identity = azurerm_user_assigned_identity.worker.id
  }
  template {
    min_replicas = var.dask_workers
    max_replicas = var.dask_workers
    container {
      name   = "worker"
      image  = var.image
      cpu    = 0.5 * var.dask_threads_per_worker
      memory = "${var.dask_threads_per_worker}Gi"
      command = [
        "dask", "worker", local.site_config.dask.scheduler_address,
        "--nthreads", tostring(var.dask_threads_per_worker), "--no-dashboard",
      ]
      env {
        name  = "AZURE_CLIENT_ID"
        value = azurerm_user_assigned_identity.worker.client_id
      }
    }
  }
  tags = local.tags
}

# --- site service -------------------------------------------------------------------------------

resource "azurerm_container_app" "site" {
  name                         = "site"
  container_app_environment_id = azurerm_container_app_environment.site.id
  resource_group_name          = azurerm_resource_group.site.name
  revision_mode                = "Single"
  workload_profile_name        = "Consumption"
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.site.id]
  }
  registry {
    server   = var.registry_server
    identity = azurerm_user_assigned_identity.site.id
  }

  secret {
    name  = local.files.config
    value = yamlencode(local.site_config)
  }
  secret {
    name  = local.files.policy
    value = var.policy_yaml
  }
  dynamic "secret" {
    for_each = var.trusted_issuers
    content {
      name  = "issuer-${secret.key}-pem"
      value = secret.value.public_key_pem
    }
  }
  secret {
    name                = local.files.site_crt
    identity            = azurerm_user_assigned_identity.site.id
    key_vault_secret_id = local.tls_secret_ids.site_crt
  }
  secret {
    name                = local.files.site_key
    identity            = azurerm_user_assigned_identity.site.id
    key_vault_secret_id = local.tls_secret_ids.site_key
  }
  secret {
    name                = local.files.ca_crt
    identity            = azurerm_user_assigned_identity.site.id
    key_vault_secret_id = local.tls_secret_ids.orchestrator_ca_crt
  }

  ingress {
    external_enabled = true
    transport        = "tcp"
    target_port      = var.service_port
    exposed_port     = var.service_port
    traffic_weight {
      latest_revision = true
      percentage      = 100
    }
    dynamic "ip_security_restriction" {
      for_each = var.orchestrator_cidrs
      content {
        name             = "orchestrator-${ip_security_restriction.key}"
        action           = "Allow"
        ip_address_range = ip_security_restriction.value
      }
    }
  }

  template {
    min_replicas = 1
    max_replicas = 1
    container {
      name    = "site"
      image   = var.image
      cpu     = 1.0
      memory  = "2Gi"
      command = ["fedflow", "site", "serve", "--config", "${local.config_dir}/${local.files.config}"]
      env {
        name  = "AZURE_CLIENT_ID"
        value = azurerm_user_assigned_identity.site.client_id
      }
      env {
        name  = "DO_NOT_TRACK"
        value = "1"
      }
      volume_mounts {
        name = "config"
        path = local.config_dir
      }
      volume_mounts {
        name = "state"
        path = local.state_dir
      }
    }
    volume {
      name         = "config"
      storage_type = "Secret"
    }
    volume {
      name         = "state"
      storage_type = "EmptyDir"
    }
  }
  tags       = local.tags
  depends_on = [azurerm_role_assignment.site_reads_tls]
}
