"""Grid carbon intensity from CodeCarbon's offline per-country table."""

from __future__ import annotations

import functools


@functools.cache
def grid_intensity_kg_per_kwh(country_iso_code: str, region: str | None = None) -> float:
    """kg CO2eq per kWh; a region (a US state or Canadian province, lower case) where CodeCarbon has one."""
    import pycountry
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    country = pycountry.countries.get(alpha_3=country_iso_code)
    if country is None:
        raise ValueError(f"energy.country_iso_code: {country_iso_code!r} is not an ISO 3166 alpha-3 country code")
    geo = GeoMetadata(country_iso_code=country_iso_code, country_name=country.name, region=region)
    return float(Emissions(DataSource()).get_private_infra_emissions(Energy.from_energy(kWh=1.0), geo))
