# Customer-managed key, buckets and identities.

data "google_project" "site" {
  project_id = var.project_id
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

locals {
  name_prefix = "fedflow-${var.site_name}"
  namespace   = "fedflow-${var.site_name}"
  labels      = merge(var.labels, { "fedflow-site" = var.site_name, "fedflow-component" = "site" })
}

# --- customer-managed key -----------------------------------------------------------------------

resource "google_kms_key_ring" "site" {
  name     = local.name_prefix
  project  = var.project_id
  location = var.region
}

resource "google_kms_crypto_key" "site" {
  name            = "site"
  key_ring        = google_kms_key_ring.site.id
  rotation_period = "7776000s" # 90 days
  purpose         = "ENCRYPT_DECRYPT"
  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "HSM"
  }
  labels = local.labels
  lifecycle {
    prevent_destroy = true
  }
}

# Cloud Storage encrypts with the key through its service agent; workloads never touch the key.
resource "google_kms_crypto_key_iam_member" "gcs" {
  crypto_key_id = google_kms_crypto_key.site.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# GKE encrypts Kubernetes secrets (application-layer secrets encryption) with the same key.
resource "google_kms_crypto_key_iam_member" "gke" {
  crypto_key_id = google_kms_crypto_key.site.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.site.number}@container-engine-robot.iam.gserviceaccount.com"
}

# Persistent disks (the site's state volume) are encrypted with the same key.
resource "google_kms_crypto_key_iam_member" "compute" {
  crypto_key_id = google_kms_crypto_key.site.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.site.number}@compute-system.iam.gserviceaccount.com"
}

# --- buckets ------------------------------------------------------------------------------------

resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62:This is the access-log target; logging it into itself would loop.
  name                        = "${local.name_prefix}-logs-${data.google_project.site.number}"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = google_kms_crypto_key.site.id
  }
  lifecycle_rule {
    condition {
      age = var.log_retention_days
    }
    action {
      type = "Delete"
    }
  }
  labels     = local.labels
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

# Cloud Storage writes usage and storage logs as this Google group.
resource "google_storage_bucket_iam_member" "access_log_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

resource "google_storage_bucket" "data" {
  name                        = "${local.name_prefix}-data-${data.google_project.site.number}"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = google_kms_crypto_key.site.id
  }
  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "data/"
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 365
    }
    action {
      type = "Delete"
    }
  }
  labels     = local.labels
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

resource "google_storage_bucket" "audit" {
  name                        = "${local.name_prefix}-audit-${data.google_project.site.number}"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  # A retention policy and object versioning cannot be combined on one bucket; the retention
  # policy is the stronger guarantee (no delete or overwrite until the period ends).
  # checkov:skip=CKV_GCP_78:Versioning cannot be combined with a bucket retention policy; retention forbids overwrite and delete outright, which versioning only records.
  retention_policy {
    retention_period = var.audit_retention_days * 86400
    is_locked        = var.audit_retention_locked
  }
  encryption {
    default_kms_key_name = google_kms_crypto_key.site.id
  }
  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "audit/"
  }
  labels     = local.labels
  depends_on = [google_kms_crypto_key_iam_member.gcs]
}

# --- identities ---------------------------------------------------------------------------------

resource "google_service_account" "site" {
  project      = var.project_id
  account_id   = "ff-${var.site_name}-site"
  display_name = "fedflow site ${var.site_name}: site service"
}

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "ff-${var.site_name}-dask"
  display_name = "fedflow site ${var.site_name}: Dask workers"
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "ff-${var.site_name}-nodes"
  display_name = "fedflow site ${var.site_name}: GKE nodes"
}

# Site service: read the data bucket, create (never read, delete or overwrite) audit objects.
resource "google_storage_bucket_iam_member" "site_reads_data" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.site.email}"
}

resource "google_storage_bucket_iam_member" "site_appends_audit" {
  bucket = google_storage_bucket.audit.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.site.email}"
}

# Dask workers: read the data bucket only.
resource "google_storage_bucket_iam_member" "worker_reads_data" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.worker.email}"
}

# Kubernetes service accounts act as the Google service accounts through Workload Identity.
resource "google_service_account_iam_member" "site_workload_identity" {
  service_account_id = google_service_account.site.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${local.namespace}/site]"
}

resource "google_service_account_iam_member" "worker_workload_identity" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${local.namespace}/dask-worker]"
}

# Nodes: write logs and metrics, pull images. Nothing else.
resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}
