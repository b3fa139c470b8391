# Private networking: a VNet with a subnet for the Container Apps environment and one for private
# endpoints (both storage accounts' blob services and the Key Vault). The apps' subnet admits the
# orchestrator's CIDR blocks on the service port and nothing else from the internet.

locals {
  apps_subnet      = cidrsubnet(var.vnet_cidr, 23 - tonumber(split("/", var.vnet_cidr)[1]), 0)
  endpoints_subnet = cidrsubnet(var.vnet_cidr, 24 - tonumber(split("/", var.vnet_cidr)[1]), 2)
  dns_zones = {
    blob  = "privatelink.blob.core.windows.net"
    vault = "privatelink.vaultcore.azure.net"
  }
}

resource "azurerm_virtual_network" "site" {
  name                = "vnet-${local.name_prefix}"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  address_space       = [var.vnet_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "apps" {
  name                 = "snet-apps"
  resource_group_name  = azurerm_resource_group.site.name
  virtual_network_name = azurerm_virtual_network.site.name
  address_prefixes     = [local.apps_subnet]
  delegation {
    name = "container-apps"
    service_delegation {
      name    = "Microsoft.App/environments"
      actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
  }
}

resource "azurerm_subnet" "endpoints" {
  name                              = "snet-private-endpoints"
  resource_group_name               = azurerm_resource_group.site.name
  virtual_network_name              = azurerm_virtual_network.site.name
  address_prefixes                  = [local.endpoints_subnet]
  private_endpoint_network_policies = "Enabled"
}

resource "azurerm_network_security_group" "apps" {
  name                = "nsg-${local.name_prefix}-apps"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  tags                = local.tags

  security_rule {
    name                       = "site-from-orchestrator"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_address_prefixes    = var.orchestrator_cidrs
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_range     = tostring(var.service_port)
  }

  security_rule {
    name                       = "platform-health-probes"
    priority                   = 110
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "*"
    source_address_prefix      = "AzureLoadBalancer"
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_range     = "*"
  }

  security_rule {
    name                       = "deny-internet"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_address_prefix      = "Internet"
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_range     = "*"
  }
}

resource "azurerm_network_security_group" "endpoints" {
  name                = "nsg-${local.name_prefix}-endpoints"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  tags                = local.tags

  security_rule {
    name                       = "https-from-apps"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_address_prefix      = local.apps_subnet
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_range     = "443"
  }

  security_rule {
    name                       = "deny-other-inbound"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_address_prefix      = "*"
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_range     = "*"
  }
}

resource "azurerm_subnet_network_security_group_association" "apps" {
  subnet_id                 = azurerm_subnet.apps.id
  network_security_group_id = azurerm_network_security_group.apps.id
}

resource "azurerm_subnet_network_security_group_association" "endpoints" {
  subnet_id                 = azurerm_subnet.endpoints.id
  network_security_group_id = azurerm_network_security_group.endpoints.id
}

resource "azurerm_private_dns_zone" "zones" {
  for_each            = local.dns_zones
  name                = each.value
  resource_group_name = azurerm_resource_group.site.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "zones" {
  for_each              = local.dns_zones
  name                  = "link-${each.key}"
  resource_group_name   = azurerm_resource_group.site.name
  private_dns_zone_name = azurerm_private_dns_zone.zones[each.key].name
  virtual_network_id    = azurerm_virtual_network.site.id
  tags                  = local.tags
}

resource "azurerm_private_endpoint" "data_blob" {
  name                = "pe-${local.name_prefix}-data-blob"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "psc-data-blob"
    private_connection_resource_id = azurerm_storage_account.data.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "default"
    private_dns_zone_ids = [azurerm_private_dns_zone.zones["blob"].id]
  }
  tags = local.tags
}

resource "azurerm_private_endpoint" "audit_blob" {
  name                = "pe-${local.name_prefix}-audit-blob"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "psc-audit-blob"
    private_connection_resource_id = azurerm_storage_account.audit.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "default"
    private_dns_zone_ids = [azurerm_private_dns_zone.zones["blob"].id]
  }
  tags = local.tags
}

resource "azurerm_private_endpoint" "key_vault" {
  name                = "pe-${local.name_prefix}-key-vault"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "psc-key-vault"
    private_connection_resource_id = azurerm_key_vault.site.id
    subresource_names              = ["vault"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "default"
    private_dns_zone_ids = [azurerm_private_dns_zone.zones["vault"].id]
  }
  tags = local.tags
}
