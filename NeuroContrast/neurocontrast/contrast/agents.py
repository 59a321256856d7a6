"""T1 relaxivities of common gadolinium-based contrast agents at 1.5 T and 3 T (conditioning input of the
differential-contrast network, Pinetz et al.: dose, field strength B, relaxivity r_B, noise σ).

Public API
----------
``AGENTS``: {key: GadoliniumAgent(name, brands, structure, r1_1p5t, r1_3t, source)}
``relaxivity(agent, field_strength_t) -> float``   r1 in L·mmol⁻¹·s⁻¹ (= mM⁻¹·s⁻¹)
``find_agent(name) -> GadoliniumAgent``             generic name, brand or key, case-insensitive

Values: r1 in human plasma (blood for the Shen column where stated) at 37 °C.
- Rohrer M, Bauer H, Mintorovitch J, Requardt M, Weinmann HJ. Comparison of magnetic properties of MRI
  contrast media solutions at different magnetic field strengths. Invest Radiol 2005;40(11):715-724,
  Table 3 (plasma, 37 °C, 1.5 T and 3 T).
- Robic C, Port M, Rousseaux O, et al. Physicochemical and pharmacokinetic profiles of gadopiclenol.
  Invest Radiol 2019;54(8):475-484 (human serum, 37 °C; 12.8 at 1.41 T, 11.6 at 3 T).
The values were transcribed from these tables; the tables themselves could not be re-read offline. Cross-check
(2026-11): a later standardised measurement by the same group (Szomolanyi P, Rohrer M, et al. Invest Radiol
2019;54(9):559-564, human plasma, 37 °C) gives gadobutrol 4.78 / 4.97, gadoteridol 3.80 / 3.28 and gadoterate
3.32 / 3.00 at 1.5 / 3 T: the same ranking, values 1-14 % lower than the 2005 table. Relaxivity measurements
differ by that much between methods and media, so treat r1 as a ±15 % conditioning input, not a constant of
nature. Only 1.5 T and 3 T are tabulated: other field strengths raise an error rather than guess.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from neurocontrast.errors import NeuroContrastError

_ROHRER = "Rohrer et al. 2005, Invest Radiol 40:715, Table 3 (plasma, 37 °C)"


@dataclasses.dataclass(frozen=True)
class GadoliniumAgent:
    """One agent: generic name, brand names, structure (macrocyclic/linear), r1 at 1.5 T and 3 T (L/mmol/s)."""

    name: str
    brands: Tuple[str, ...]
    structure: str
    r1_1p5t: float
    r1_3t: float
    source: str


AGENTS: Dict[str, GadoliniumAgent] = {
    "gadobutrol": GadoliniumAgent("gadobutrol", ("Gadovist", "Gadavist"), "macrocyclic", 5.2, 5.0, _ROHRER),
    "gadoterate": GadoliniumAgent("gadoterate meglumine", ("Dotarem", "Clariscan"), "macrocyclic", 3.6, 3.5, _ROHRER),
    "gadoteridol": GadoliniumAgent("gadoteridol", ("ProHance",), "macrocyclic", 4.1, 3.7, _ROHRER),
    "gadopentetate": GadoliniumAgent("gadopentetate dimeglumine", ("Magnevist",), "linear", 4.1, 3.7, _ROHRER),
    "gadodiamide": GadoliniumAgent("gadodiamide", ("Omniscan",), "linear", 4.3, 4.0, _ROHRER),
    "gadobenate": GadoliniumAgent("gadobenate dimeglumine", ("MultiHance",), "linear", 6.3, 5.5, _ROHRER),
    "gadoxetate": GadoliniumAgent("gadoxetate disodium", ("Primovist", "Eovist"), "linear", 6.9, 6.2, _ROHRER),
    "gadoversetamide": GadoliniumAgent("gadoversetamide", ("OptiMARK",), "linear", 4.7, 4.5, _ROHRER),
    "gadopiclenol": GadoliniumAgent("gadopiclenol", ("Elucirem", "Vueway"), "macrocyclic", 12.8, 11.6,
                                    "Robic et al. 2019, Invest Radiol 54:475 (human serum, 37 °C; 1.41 T value)"),
}


def find_agent(name: str) -> GadoliniumAgent:
    """Look an agent up by key, generic name or brand (case-insensitive; 'gadoterate meglumine', 'Dotarem'...).

    Raises NeuroContrastError listing the known agents if the name is unknown.
    """
    key = str(name).strip().lower()
    for k, agent in AGENTS.items():
        if key in (k, agent.name.lower()) or key in (b.lower() for b in agent.brands):
            return agent
    known = ", ".join(f"{k} ({'/'.join(a.brands)})" for k, a in AGENTS.items())
    raise NeuroContrastError(f"unknown contrast agent {name!r}; known agents: {known}")


def relaxivity(agent: str, field_strength_t: float) -> float:
    """T1 relaxivity r1 (L·mmol⁻¹·s⁻¹) of ``agent`` at ``field_strength_t`` tesla (1.5 or 3, ±0.1 T).

    Raises NeuroContrastError for an unknown agent or a field strength other than ~1.5 T or ~3 T.
    """
    a = find_agent(agent)
    try:
        b = float(field_strength_t)
    except (TypeError, ValueError):
        raise NeuroContrastError(f"field strength must be a number in tesla (1.5 or 3), "
                                 f"got {field_strength_t!r}") from None
    if abs(b - 1.5) <= 0.1:
        return a.r1_1p5t
    if abs(b - 3.0) <= 0.1:
        return a.r1_3t
    raise NeuroContrastError(f"field strength {field_strength_t} T is not tabulated; relaxivities are known at 1.5 T "
                             "and 3 T only")
