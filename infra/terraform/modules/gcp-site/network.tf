# Private networking: one VPC and subnet with flow logs and Private Google Access (nodes have no
# external addresses and reach Cloud Storage and Artifact Registry privately). The GKE control
# plane admits admin_cidrs only; the site's load balancer admits orchestrator_cidrs only
# (loadBalancerSourceRanges become VPC firewall rules).

resource "google_compute_network" "site" {
  name                    = local.name_prefix
  project                 = var.project_id
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "site" {
  name                     = local.name_prefix
  project                  = var.project_id
  region                   = var.region
  network                  = google_compute_network.site.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }
  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 1.0
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Nothing enters the VPC unless a rule says so: GKE adds the load balancer's rules (orchestrator
# CIDRs and Google health checks) above this one.
resource "google_compute_firewall" "deny_ingress" {
  name      = "${local.name_prefix}-deny-ingress"
  project   = var.project_id
  network   = google_compute_network.site.id
  direction = "INGRESS"
  priority  = 65534
  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_container_cluster" "site" {
  # checkov:skip=CKV_GCP_12:Autopilot always runs GKE Dataplane V2, which enforces NetworkPolicy (k8s.tf defines them); the legacy network_policy block is rejected on Autopilot.
  # checkov:skip=CKV_GCP_69:Autopilot always runs the GKE metadata server (Workload Identity is always on); node_config cannot be set on Autopilot.
  # checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Google Workspace domain the custodian may not have; access to the cluster is limited by master_authorized_networks to admin_cidrs and by IAM.
  name                = local.name_prefix
  project             = var.project_id
  location            = var.region
  enable_autopilot    = true
  # On by default for Autopilot; explicit so flow logs see pod-to-pod traffic on one node.
  enable_intranode_visibility = true
  network             = google_compute_network.site.id
  subnetwork          = google_compute_subnetwork.site.id
  deletion_protection = true
  resource_labels     = merge(var.labels, { "fedflow-site" = var.site_name, "fedflow-component" = "site" })

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.admin_cidrs
      content {
        cidr_block   = cidr_blocks.value
        display_name = "admin-${cidr_blocks.key}"
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  release_channel {
    channel = "REGULAR"
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.site.id
  }

  cluster_autoscaling {
    auto_provisioning_defaults {
      service_account = google_service_account.nodes.email
      oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    }
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
  }

  depends_on = [google_kms_crypto_key_iam_member.gke]
}
