//! `__$update_mask`: one bit per captured column by `column_ordinal`. Big-endian in byte
//! order: ordinal 1 is the least significant bit of the LAST byte (as `sys.fn_cdc_is_bit_set`
//! reads it).

/// Mask length in bytes for `columns` captured columns (at least one byte).
pub fn mask_len(columns: usize) -> usize {
    columns.div_ceil(8).max(1)
}

/// Sets the bit of a 1-based ordinal.
pub fn set_bit(mask: &mut [u8], ordinal: usize) {
    let len = mask.len();
    let byte = len - 1 - (ordinal - 1) / 8;
    mask[byte] |= 1 << ((ordinal - 1) % 8);
}

/// `sys.fn_cdc_is_bit_set(position, mask)`: false for positions outside the mask.
pub fn is_bit_set(mask: &[u8], ordinal: usize) -> bool {
    if ordinal == 0 || (ordinal - 1) / 8 >= mask.len() {
        return false;
    }
    let byte = mask.len() - 1 - (ordinal - 1) / 8;
    mask[byte] >> ((ordinal - 1) % 8) & 1 == 1
}

/// All bits of `columns` ordinals set (inserts and deletes).
pub fn all_bits(columns: usize) -> Vec<u8> {
    let mut mask = vec![0u8; mask_len(columns)];
    for ordinal in 1..=columns {
        set_bit(&mut mask, ordinal);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinal_one_is_lsb_of_last_byte() {
        // The reference's example: 10 captured columns give 0x03FF on insert.
        assert_eq!(all_bits(10), vec![0x03, 0xFF]);
        let mut m = vec![0u8; 2];
        set_bit(&mut m, 1);
        assert_eq!(m, vec![0x00, 0x01]);
        set_bit(&mut m, 9);
        assert_eq!(m, vec![0x01, 0x01]);
        assert!(
            is_bit_set(&m, 1) && is_bit_set(&m, 9) && !is_bit_set(&m, 2) && !is_bit_set(&m, 17)
        );
        assert_eq!(all_bits(8), vec![0xFF]);
        assert_eq!(mask_len(0), 1);
    }
}
