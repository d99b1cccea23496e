"""Field validators shared by every pass, so every pass rejects bad settings the same way.

One job per module: :mod:`~compresslab.validate.values` checks one value, :mod:`~compresslab.validate.fields`
checks a settings dataclass's fields against their annotations, :mod:`~compresslab.validate.hints` says "did you
mean", :mod:`~compresslab.validate.writable` probes an output directory. Every name is imported from here.
"""

from __future__ import annotations

from compresslab.validate.fields import (FieldTypeError, check_field_types, check_values, default_note,
                                         python_scalars, typed_post_init, typed_settings)
from compresslab.validate.hints import choice_hint, did_you_mean
from compresslab.validate.values import (SettingsError, check_bool, check_bools, check_choice,
                                         check_finite_nonnegative, check_finite_positive, check_fraction, check_int,
                                         check_list, check_loss_weight, check_nonnegative, check_positive,
                                         check_positive_int, check_text, coerce_block, coerce_enum, coerce_settings,
                                         field_default, is_int, is_number, nested_settings)
from compresslab.validate.writable import check_writable

__all__ = ["FieldTypeError", "default_note", "check_bool", "check_bools", "check_choice", "check_field_types",
           "check_finite_nonnegative", "check_finite_positive", "check_fraction", "check_int", "check_list",
           "check_loss_weight", "check_nonnegative", "check_positive", "check_positive_int", "check_text",
           "check_values", "coerce_enum", "is_int", "is_number", "python_scalars", "typed_post_init", "typed_settings"]
