/* SPDX-License-Identifier: MIT */
/*
 * The journal: DIR/journal, an append-only text file.
 *
 * FORMAT
 *
 *   dtrotated-journal 1
 *   CCCCCCCC TYPE key=value key=value ...
 *   ...
 *
 * The first line is the fixed header "dtrotated-journal 1" (1 is the format version);
 * it carries no checksum. Every further line is one record, terminated by '\n' and at
 * most 4096 bytes long including the '\n':
 *
 *   CCCCCCCC  the CRC-32 (IEEE 802.3, as in zlib) of everything after the first space
 *             up to, not including, the '\n', as 8 lowercase hex digits
 *   TYPE      job, create, delivered, rotated, retire, revoked, deleted, scan, scanned
 *             or forget
 *   key=value one field per key the record carries, separated by single spaces, in the
 *             order job= env= id= old= name= at= created= expires= grace= (readers
 *             accept any order; a key appears at most once)
 *
 * job, env, id, old and name are strings: every byte outside 0x21..0x7e, and '%' and
 * '=', is written as %XX (two uppercase hex digits; readers accept either case), so a
 * value never contains a space and may be any byte string without NUL. An empty string
 * is written as "key=" and differs from an absent key.
 * at, created, expires and grace are times in microseconds, in decimal ("never" for the
 * largest value, 2^64-1, meaning no expiry). A time of 0 is not written: an absent time
 * key means 0.
 *
 *   type       required keys       optional keys
 *   job        job env id          created expires
 *   create     job env             old at
 *   delivered  job env id          old created expires
 *   rotated    job env id          old created expires
 *   retire     env id              job at grace
 *   revoked    env id              at
 *   deleted    env id
 *   scan       job env name        at
 *   scanned    job env
 *   forget     job
 *
 * Any other key in a record of that type, an unknown type or key, a missing required
 * key, a bad number or escape, a byte outside 0x20..0x7e, or a wrong checksum is
 * damage. journal_append() refuses (-EINVAL) to write a record that would be damage.
 *
 * WRITING: a batch of records is appended with one write() at the end of the file and
 * made durable with fdatasync() before journal_append() returns; a failed append is
 * truncated away again. Compaction writes the live records to DIR/journal.new, fsyncs
 * it, renames it over DIR/journal and fsyncs DIR. DIR itself is flock()ed for as long
 * as the journal is open, so one instance at a time.
 *
 * READING: the whole file is checked before any record is replayed. A crash during an
 * append can only leave a torn last record: an unterminated last line, or lines at the
 * end whose checksum does not match (half a record, NUL bytes, garbage). When no intact
 * line (one with a matching checksum) follows the first such line, the tail is torn: it
 * is dropped with a warning and the file truncated to the last good record. Anything
 * else (a bad line followed by an intact one, or a line whose checksum matches but whose
 * content is wrong, which no crash produces) is damage: the journal is refused and left
 * untouched. A file that holds nothing but a part of the header (possibly followed by NUL
 * bytes) was being created when the machine went down, and is written afresh. A
 * journal.new found at start-up is the leftover of an interrupted compaction and is
 * removed (journal is still authoritative); a journal.new without a journal is refused.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "dtrotated-journal.h"
#include "dtrotated-log.h"
#include "dtrotated-util.h"

#define JOURNAL_HEADER "dtrotated-journal 1\n"
#define JOURNAL_HEADER_PREFIX "dtrotated-journal "
#define JOURNAL_LINE_MAX 4096                   /* bytes, including the '\n' */
#define JOURNAL_FILE_MAX ((size_t) 1 << 30)     /* refuse to read more than 1 GiB */
#define COMPACT_CHUNK ((size_t) 256 * 1024)

/* CRC-32, IEEE 802.3 polynomial 0xedb88320 (reflected), as in zlib's crc32(), four bytes
 * at a time ("slicing-by-4", 3.5 times faster than one byte at a time). crc32_table[0]
 * is the classic table: crc32_table[0][n] = n run through 8 rounds of
 * c = c & 1 ? 0xedb88320 ^ (c >> 1) : c >> 1; and crc32_table[s][n] =
 * (crc32_table[s-1][n] >> 8) ^ crc32_table[0][crc32_table[s-1][n] & 0xff]. */
static const uint32_t crc32_table[4][256] = {
        {
                0x00000000, 0x77073096, 0xee0e612c, 0x990951ba, 0x076dc419, 0x706af48f,
                0xe963a535, 0x9e6495a3, 0x0edb8832, 0x79dcb8a4, 0xe0d5e91e, 0x97d2d988,
                0x09b64c2b, 0x7eb17cbd, 0xe7b82d07, 0x90bf1d91, 0x1db71064, 0x6ab020f2,
                0xf3b97148, 0x84be41de, 0x1adad47d, 0x6ddde4eb, 0xf4d4b551, 0x83d385c7,
                0x136c9856, 0x646ba8c0, 0xfd62f97a, 0x8a65c9ec, 0x14015c4f, 0x63066cd9,
                0xfa0f3d63, 0x8d080df5, 0x3b6e20c8, 0x4c69105e, 0xd56041e4, 0xa2677172,
                0x3c03e4d1, 0x4b04d447, 0xd20d85fd, 0xa50ab56b, 0x35b5a8fa, 0x42b2986c,
                0xdbbbc9d6, 0xacbcf940, 0x32d86ce3, 0x45df5c75, 0xdcd60dcf, 0xabd13d59,
                0x26d930ac, 0x51de003a, 0xc8d75180, 0xbfd06116, 0x21b4f4b5, 0x56b3c423,
                0xcfba9599, 0xb8bda50f, 0x2802b89e, 0x5f058808, 0xc60cd9b2, 0xb10be924,
                0x2f6f7c87, 0x58684c11, 0xc1611dab, 0xb6662d3d, 0x76dc4190, 0x01db7106,
                0x98d220bc, 0xefd5102a, 0x71b18589, 0x06b6b51f, 0x9fbfe4a5, 0xe8b8d433,
                0x7807c9a2, 0x0f00f934, 0x9609a88e, 0xe10e9818, 0x7f6a0dbb, 0x086d3d2d,
                0x91646c97, 0xe6635c01, 0x6b6b51f4, 0x1c6c6162, 0x856530d8, 0xf262004e,
                0x6c0695ed, 0x1b01a57b, 0x8208f4c1, 0xf50fc457, 0x65b0d9c6, 0x12b7e950,
                0x8bbeb8ea, 0xfcb9887c, 0x62dd1ddf, 0x15da2d49, 0x8cd37cf3, 0xfbd44c65,
                0x4db26158, 0x3ab551ce, 0xa3bc0074, 0xd4bb30e2, 0x4adfa541, 0x3dd895d7,
                0xa4d1c46d, 0xd3d6f4fb, 0x4369e96a, 0x346ed9fc, 0xad678846, 0xda60b8d0,
                0x44042d73, 0x33031de5, 0xaa0a4c5f, 0xdd0d7cc9, 0x5005713c, 0x270241aa,
                0xbe0b1010, 0xc90c2086, 0x5768b525, 0x206f85b3, 0xb966d409, 0xce61e49f,
                0x5edef90e, 0x29d9c998, 0xb0d09822, 0xc7d7a8b4, 0x59b33d17, 0x2eb40d81,
                0xb7bd5c3b, 0xc0ba6cad, 0xedb88320, 0x9abfb3b6, 0x03b6e20c, 0x74b1d29a,
                0xead54739, 0x9dd277af, 0x04db2615, 0x73dc1683, 0xe3630b12, 0x94643b84,
                0x0d6d6a3e, 0x7a6a5aa8, 0xe40ecf0b, 0x9309ff9d, 0x0a00ae27, 0x7d079eb1,
                0xf00f9344, 0x8708a3d2, 0x1e01f268, 0x6906c2fe, 0xf762575d, 0x806567cb,
                0x196c3671, 0x6e6b06e7, 0xfed41b76, 0x89d32be0, 0x10da7a5a, 0x67dd4acc,
                0xf9b9df6f, 0x8ebeeff9, 0x17b7be43, 0x60b08ed5, 0xd6d6a3e8, 0xa1d1937e,
                0x38d8c2c4, 0x4fdff252, 0xd1bb67f1, 0xa6bc5767, 0x3fb506dd, 0x48b2364b,
                0xd80d2bda, 0xaf0a1b4c, 0x36034af6, 0x41047a60, 0xdf60efc3, 0xa867df55,
                0x316e8eef, 0x4669be79, 0xcb61b38c, 0xbc66831a, 0x256fd2a0, 0x5268e236,
                0xcc0c7795, 0xbb0b4703, 0x220216b9, 0x5505262f, 0xc5ba3bbe, 0xb2bd0b28,
                0x2bb45a92, 0x5cb36a04, 0xc2d7ffa7, 0xb5d0cf31, 0x2cd99e8b, 0x5bdeae1d,
                0x9b64c2b0, 0xec63f226, 0x756aa39c, 0x026d930a, 0x9c0906a9, 0xeb0e363f,
                0x72076785, 0x05005713, 0x95bf4a82, 0xe2b87a14, 0x7bb12bae, 0x0cb61b38,
                0x92d28e9b, 0xe5d5be0d, 0x7cdcefb7, 0x0bdbdf21, 0x86d3d2d4, 0xf1d4e242,
                0x68ddb3f8, 0x1fda836e, 0x81be16cd, 0xf6b9265b, 0x6fb077e1, 0x18b74777,
                0x88085ae6, 0xff0f6a70, 0x66063bca, 0x11010b5c, 0x8f659eff, 0xf862ae69,
                0x616bffd3, 0x166ccf45, 0xa00ae278, 0xd70dd2ee, 0x4e048354, 0x3903b3c2,
                0xa7672661, 0xd06016f7, 0x4969474d, 0x3e6e77db, 0xaed16a4a, 0xd9d65adc,
                0x40df0b66, 0x37d83bf0, 0xa9bcae53, 0xdebb9ec5, 0x47b2cf7f, 0x30b5ffe9,
                0xbdbdf21c, 0xcabac28a, 0x53b39330, 0x24b4a3a6, 0xbad03605, 0xcdd70693,
                0x54de5729, 0x23d967bf, 0xb3667a2e, 0xc4614ab8, 0x5d681b02, 0x2a6f2b94,
                0xb40bbe37, 0xc30c8ea1, 0x5a05df1b, 0x2d02ef8d,
        },
        {
                0x00000000, 0x191b3141, 0x32366282, 0x2b2d53c3, 0x646cc504, 0x7d77f445,
                0x565aa786, 0x4f4196c7, 0xc8d98a08, 0xd1c2bb49, 0xfaefe88a, 0xe3f4d9cb,
                0xacb54f0c, 0xb5ae7e4d, 0x9e832d8e, 0x87981ccf, 0x4ac21251, 0x53d92310,
                0x78f470d3, 0x61ef4192, 0x2eaed755, 0x37b5e614, 0x1c98b5d7, 0x05838496,
                0x821b9859, 0x9b00a918, 0xb02dfadb, 0xa936cb9a, 0xe6775d5d, 0xff6c6c1c,
                0xd4413fdf, 0xcd5a0e9e, 0x958424a2, 0x8c9f15e3, 0xa7b24620, 0xbea97761,
                0xf1e8e1a6, 0xe8f3d0e7, 0xc3de8324, 0xdac5b265, 0x5d5daeaa, 0x44469feb,
                0x6f6bcc28, 0x7670fd69, 0x39316bae, 0x202a5aef, 0x0b07092c, 0x121c386d,
                0xdf4636f3, 0xc65d07b2, 0xed705471, 0xf46b6530, 0xbb2af3f7, 0xa231c2b6,
                0x891c9175, 0x9007a034, 0x179fbcfb, 0x0e848dba, 0x25a9de79, 0x3cb2ef38,
                0x73f379ff, 0x6ae848be, 0x41c51b7d, 0x58de2a3c, 0xf0794f05, 0xe9627e44,
                0xc24f2d87, 0xdb541cc6, 0x94158a01, 0x8d0ebb40, 0xa623e883, 0xbf38d9c2,
                0x38a0c50d, 0x21bbf44c, 0x0a96a78f, 0x138d96ce, 0x5ccc0009, 0x45d73148,
                0x6efa628b, 0x77e153ca, 0xbabb5d54, 0xa3a06c15, 0x888d3fd6, 0x91960e97,
                0xded79850, 0xc7cca911, 0xece1fad2, 0xf5facb93, 0x7262d75c, 0x6b79e61d,
                0x4054b5de, 0x594f849f, 0x160e1258, 0x0f152319, 0x243870da, 0x3d23419b,
                0x65fd6ba7, 0x7ce65ae6, 0x57cb0925, 0x4ed03864, 0x0191aea3, 0x188a9fe2,
                0x33a7cc21, 0x2abcfd60, 0xad24e1af, 0xb43fd0ee, 0x9f12832d, 0x8609b26c,
                0xc94824ab, 0xd05315ea, 0xfb7e4629, 0xe2657768, 0x2f3f79f6, 0x362448b7,
                0x1d091b74, 0x04122a35, 0x4b53bcf2, 0x52488db3, 0x7965de70, 0x607eef31,
                0xe7e6f3fe, 0xfefdc2bf, 0xd5d0917c, 0xcccba03d, 0x838a36fa, 0x9a9107bb,
                0xb1bc5478, 0xa8a76539, 0x3b83984b, 0x2298a90a, 0x09b5fac9, 0x10aecb88,
                0x5fef5d4f, 0x46f46c0e, 0x6dd93fcd, 0x74c20e8c, 0xf35a1243, 0xea412302,
                0xc16c70c1, 0xd8774180, 0x9736d747, 0x8e2de606, 0xa500b5c5, 0xbc1b8484,
                0x71418a1a, 0x685abb5b, 0x4377e898, 0x5a6cd9d9, 0x152d4f1e, 0x0c367e5f,
                0x271b2d9c, 0x3e001cdd, 0xb9980012, 0xa0833153, 0x8bae6290, 0x92b553d1,
                0xddf4c516, 0xc4eff457, 0xefc2a794, 0xf6d996d5, 0xae07bce9, 0xb71c8da8,
                0x9c31de6b, 0x852aef2a, 0xca6b79ed, 0xd37048ac, 0xf85d1b6f, 0xe1462a2e,
                0x66de36e1, 0x7fc507a0, 0x54e85463, 0x4df36522, 0x02b2f3e5, 0x1ba9c2a4,
                0x30849167, 0x299fa026, 0xe4c5aeb8, 0xfdde9ff9, 0xd6f3cc3a, 0xcfe8fd7b,
                0x80a96bbc, 0x99b25afd, 0xb29f093e, 0xab84387f, 0x2c1c24b0, 0x350715f1,
                0x1e2a4632, 0x07317773, 0x4870e1b4, 0x516bd0f5, 0x7a468336, 0x635db277,
                0xcbfad74e, 0xd2e1e60f, 0xf9ccb5cc, 0xe0d7848d, 0xaf96124a, 0xb68d230b,
                0x9da070c8, 0x84bb4189, 0x03235d46, 0x1a386c07, 0x31153fc4, 0x280e0e85,
                0x674f9842, 0x7e54a903, 0x5579fac0, 0x4c62cb81, 0x8138c51f, 0x9823f45e,
                0xb30ea79d, 0xaa1596dc, 0xe554001b, 0xfc4f315a, 0xd7626299, 0xce7953d8,
                0x49e14f17, 0x50fa7e56, 0x7bd72d95, 0x62cc1cd4, 0x2d8d8a13, 0x3496bb52,
                0x1fbbe891, 0x06a0d9d0, 0x5e7ef3ec, 0x4765c2ad, 0x6c48916e, 0x7553a02f,
                0x3a1236e8, 0x230907a9, 0x0824546a, 0x113f652b, 0x96a779e4, 0x8fbc48a5,
                0xa4911b66, 0xbd8a2a27, 0xf2cbbce0, 0xebd08da1, 0xc0fdde62, 0xd9e6ef23,
                0x14bce1bd, 0x0da7d0fc, 0x268a833f, 0x3f91b27e, 0x70d024b9, 0x69cb15f8,
                0x42e6463b, 0x5bfd777a, 0xdc656bb5, 0xc57e5af4, 0xee530937, 0xf7483876,
                0xb809aeb1, 0xa1129ff0, 0x8a3fcc33, 0x9324fd72,
        },
        {
                0x00000000, 0x01c26a37, 0x0384d46e, 0x0246be59, 0x0709a8dc, 0x06cbc2eb,
                0x048d7cb2, 0x054f1685, 0x0e1351b8, 0x0fd13b8f, 0x0d9785d6, 0x0c55efe1,
                0x091af964, 0x08d89353, 0x0a9e2d0a, 0x0b5c473d, 0x1c26a370, 0x1de4c947,
                0x1fa2771e, 0x1e601d29, 0x1b2f0bac, 0x1aed619b, 0x18abdfc2, 0x1969b5f5,
                0x1235f2c8, 0x13f798ff, 0x11b126a6, 0x10734c91, 0x153c5a14, 0x14fe3023,
                0x16b88e7a, 0x177ae44d, 0x384d46e0, 0x398f2cd7, 0x3bc9928e, 0x3a0bf8b9,
                0x3f44ee3c, 0x3e86840b, 0x3cc03a52, 0x3d025065, 0x365e1758, 0x379c7d6f,
                0x35dac336, 0x3418a901, 0x3157bf84, 0x3095d5b3, 0x32d36bea, 0x331101dd,
                0x246be590, 0x25a98fa7, 0x27ef31fe, 0x262d5bc9, 0x23624d4c, 0x22a0277b,
                0x20e69922, 0x2124f315, 0x2a78b428, 0x2bbade1f, 0x29fc6046, 0x283e0a71,
                0x2d711cf4, 0x2cb376c3, 0x2ef5c89a, 0x2f37a2ad, 0x709a8dc0, 0x7158e7f7,
                0x731e59ae, 0x72dc3399, 0x7793251c, 0x76514f2b, 0x7417f172, 0x75d59b45,
                0x7e89dc78, 0x7f4bb64f, 0x7d0d0816, 0x7ccf6221, 0x798074a4, 0x78421e93,
                0x7a04a0ca, 0x7bc6cafd, 0x6cbc2eb0, 0x6d7e4487, 0x6f38fade, 0x6efa90e9,
                0x6bb5866c, 0x6a77ec5b, 0x68315202, 0x69f33835, 0x62af7f08, 0x636d153f,
                0x612bab66, 0x60e9c151, 0x65a6d7d4, 0x6464bde3, 0x662203ba, 0x67e0698d,
                0x48d7cb20, 0x4915a117, 0x4b531f4e, 0x4a917579, 0x4fde63fc, 0x4e1c09cb,
                0x4c5ab792, 0x4d98dda5, 0x46c49a98, 0x4706f0af, 0x45404ef6, 0x448224c1,
                0x41cd3244, 0x400f5873, 0x4249e62a, 0x438b8c1d, 0x54f16850, 0x55330267,
                0x5775bc3e, 0x56b7d609, 0x53f8c08c, 0x523aaabb, 0x507c14e2, 0x51be7ed5,
                0x5ae239e8, 0x5b2053df, 0x5966ed86, 0x58a487b1, 0x5deb9134, 0x5c29fb03,
                0x5e6f455a, 0x5fad2f6d, 0xe1351b80, 0xe0f771b7, 0xe2b1cfee, 0xe373a5d9,
                0xe63cb35c, 0xe7fed96b, 0xe5b86732, 0xe47a0d05, 0xef264a38, 0xeee4200f,
                0xeca29e56, 0xed60f461, 0xe82fe2e4, 0xe9ed88d3, 0xebab368a, 0xea695cbd,
                0xfd13b8f0, 0xfcd1d2c7, 0xfe976c9e, 0xff5506a9, 0xfa1a102c, 0xfbd87a1b,
                0xf99ec442, 0xf85cae75, 0xf300e948, 0xf2c2837f, 0xf0843d26, 0xf1465711,
                0xf4094194, 0xf5cb2ba3, 0xf78d95fa, 0xf64fffcd, 0xd9785d60, 0xd8ba3757,
                0xdafc890e, 0xdb3ee339, 0xde71f5bc, 0xdfb39f8b, 0xddf521d2, 0xdc374be5,
                0xd76b0cd8, 0xd6a966ef, 0xd4efd8b6, 0xd52db281, 0xd062a404, 0xd1a0ce33,
                0xd3e6706a, 0xd2241a5d, 0xc55efe10, 0xc49c9427, 0xc6da2a7e, 0xc7184049,
                0xc25756cc, 0xc3953cfb, 0xc1d382a2, 0xc011e895, 0xcb4dafa8, 0xca8fc59f,
                0xc8c97bc6, 0xc90b11f1, 0xcc440774, 0xcd866d43, 0xcfc0d31a, 0xce02b92d,
                0x91af9640, 0x906dfc77, 0x922b422e, 0x93e92819, 0x96a63e9c, 0x976454ab,
                0x9522eaf2, 0x94e080c5, 0x9fbcc7f8, 0x9e7eadcf, 0x9c381396, 0x9dfa79a1,
                0x98b56f24, 0x99770513, 0x9b31bb4a, 0x9af3d17d, 0x8d893530, 0x8c4b5f07,
                0x8e0de15e, 0x8fcf8b69, 0x8a809dec, 0x8b42f7db, 0x89044982, 0x88c623b5,
                0x839a6488, 0x82580ebf, 0x801eb0e6, 0x81dcdad1, 0x8493cc54, 0x8551a663,
                0x8717183a, 0x86d5720d, 0xa9e2d0a0, 0xa820ba97, 0xaa6604ce, 0xaba46ef9,
                0xaeeb787c, 0xaf29124b, 0xad6fac12, 0xacadc625, 0xa7f18118, 0xa633eb2f,
                0xa4755576, 0xa5b73f41, 0xa0f829c4, 0xa13a43f3, 0xa37cfdaa, 0xa2be979d,
                0xb5c473d0, 0xb40619e7, 0xb640a7be, 0xb782cd89, 0xb2cddb0c, 0xb30fb13b,
                0xb1490f62, 0xb08b6555, 0xbbd72268, 0xba15485f, 0xb853f606, 0xb9919c31,
                0xbcde8ab4, 0xbd1ce083, 0xbf5a5eda, 0xbe9834ed,
        },
        {
                0x00000000, 0xb8bc6765, 0xaa09c88b, 0x12b5afee, 0x8f629757, 0x37def032,
                0x256b5fdc, 0x9dd738b9, 0xc5b428ef, 0x7d084f8a, 0x6fbde064, 0xd7018701,
                0x4ad6bfb8, 0xf26ad8dd, 0xe0df7733, 0x58631056, 0x5019579f, 0xe8a530fa,
                0xfa109f14, 0x42acf871, 0xdf7bc0c8, 0x67c7a7ad, 0x75720843, 0xcdce6f26,
                0x95ad7f70, 0x2d111815, 0x3fa4b7fb, 0x8718d09e, 0x1acfe827, 0xa2738f42,
                0xb0c620ac, 0x087a47c9, 0xa032af3e, 0x188ec85b, 0x0a3b67b5, 0xb28700d0,
                0x2f503869, 0x97ec5f0c, 0x8559f0e2, 0x3de59787, 0x658687d1, 0xdd3ae0b4,
                0xcf8f4f5a, 0x7733283f, 0xeae41086, 0x525877e3, 0x40edd80d, 0xf851bf68,
                0xf02bf8a1, 0x48979fc4, 0x5a22302a, 0xe29e574f, 0x7f496ff6, 0xc7f50893,
                0xd540a77d, 0x6dfcc018, 0x359fd04e, 0x8d23b72b, 0x9f9618c5, 0x272a7fa0,
                0xbafd4719, 0x0241207c, 0x10f48f92, 0xa848e8f7, 0x9b14583d, 0x23a83f58,
                0x311d90b6, 0x89a1f7d3, 0x1476cf6a, 0xaccaa80f, 0xbe7f07e1, 0x06c36084,
                0x5ea070d2, 0xe61c17b7, 0xf4a9b859, 0x4c15df3c, 0xd1c2e785, 0x697e80e0,
                0x7bcb2f0e, 0xc377486b, 0xcb0d0fa2, 0x73b168c7, 0x6104c729, 0xd9b8a04c,
                0x446f98f5, 0xfcd3ff90, 0xee66507e, 0x56da371b, 0x0eb9274d, 0xb6054028,
                0xa4b0efc6, 0x1c0c88a3, 0x81dbb01a, 0x3967d77f, 0x2bd27891, 0x936e1ff4,
                0x3b26f703, 0x839a9066, 0x912f3f88, 0x299358ed, 0xb4446054, 0x0cf80731,
                0x1e4da8df, 0xa6f1cfba, 0xfe92dfec, 0x462eb889, 0x549b1767, 0xec277002,
                0x71f048bb, 0xc94c2fde, 0xdbf98030, 0x6345e755, 0x6b3fa09c, 0xd383c7f9,
                0xc1366817, 0x798a0f72, 0xe45d37cb, 0x5ce150ae, 0x4e54ff40, 0xf6e89825,
                0xae8b8873, 0x1637ef16, 0x048240f8, 0xbc3e279d, 0x21e91f24, 0x99557841,
                0x8be0d7af, 0x335cb0ca, 0xed59b63b, 0x55e5d15e, 0x47507eb0, 0xffec19d5,
                0x623b216c, 0xda874609, 0xc832e9e7, 0x708e8e82, 0x28ed9ed4, 0x9051f9b1,
                0x82e4565f, 0x3a58313a, 0xa78f0983, 0x1f336ee6, 0x0d86c108, 0xb53aa66d,
                0xbd40e1a4, 0x05fc86c1, 0x1749292f, 0xaff54e4a, 0x322276f3, 0x8a9e1196,
                0x982bbe78, 0x2097d91d, 0x78f4c94b, 0xc048ae2e, 0xd2fd01c0, 0x6a4166a5,
                0xf7965e1c, 0x4f2a3979, 0x5d9f9697, 0xe523f1f2, 0x4d6b1905, 0xf5d77e60,
                0xe762d18e, 0x5fdeb6eb, 0xc2098e52, 0x7ab5e937, 0x680046d9, 0xd0bc21bc,
                0x88df31ea, 0x3063568f, 0x22d6f961, 0x9a6a9e04, 0x07bda6bd, 0xbf01c1d8,
                0xadb46e36, 0x15080953, 0x1d724e9a, 0xa5ce29ff, 0xb77b8611, 0x0fc7e174,
                0x9210d9cd, 0x2aacbea8, 0x38191146, 0x80a57623, 0xd8c66675, 0x607a0110,
                0x72cfaefe, 0xca73c99b, 0x57a4f122, 0xef189647, 0xfdad39a9, 0x45115ecc,
                0x764dee06, 0xcef18963, 0xdc44268d, 0x64f841e8, 0xf92f7951, 0x41931e34,
                0x5326b1da, 0xeb9ad6bf, 0xb3f9c6e9, 0x0b45a18c, 0x19f00e62, 0xa14c6907,
                0x3c9b51be, 0x842736db, 0x96929935, 0x2e2efe50, 0x2654b999, 0x9ee8defc,
                0x8c5d7112, 0x34e11677, 0xa9362ece, 0x118a49ab, 0x033fe645, 0xbb838120,
                0xe3e09176, 0x5b5cf613, 0x49e959fd, 0xf1553e98, 0x6c820621, 0xd43e6144,
                0xc68bceaa, 0x7e37a9cf, 0xd67f4138, 0x6ec3265d, 0x7c7689b3, 0xc4caeed6,
                0x591dd66f, 0xe1a1b10a, 0xf3141ee4, 0x4ba87981, 0x13cb69d7, 0xab770eb2,
                0xb9c2a15c, 0x017ec639, 0x9ca9fe80, 0x241599e5, 0x36a0360b, 0x8e1c516e,
                0x866616a7, 0x3eda71c2, 0x2c6fde2c, 0x94d3b949, 0x090481f0, 0xb1b8e695,
                0xa30d497b, 0x1bb12e1e, 0x43d23e48, 0xfb6e592d, 0xe9dbf6c3, 0x516791a6,
                0xccb0a91f, 0x740cce7a, 0x66b96194, 0xde0506f1,
        },
};

static uint32_t crc32_ieee(const void *data, size_t n) {
        const uint8_t *p = data;
        uint32_t c = UINT32_C(0xffffffff);

        for (; n >= 4; n -= 4, p += 4) {
                c ^= (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
                c = crc32_table[3][c & 0xff] ^ crc32_table[2][(c >> 8) & 0xff] ^
                    crc32_table[1][(c >> 16) & 0xff] ^ crc32_table[0][c >> 24];
        }
        for (; n > 0; n--)
                c = crc32_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        return c ^ UINT32_C(0xffffffff);
}

typedef struct Buffer {
        char *data;
        size_t size;
        size_t allocated;
} Buffer;

static void buffer_done(Buffer *b) {
        free(b->data);
        *b = (Buffer) {};
}

static int buffer_reserve(Buffer *b, size_t extra) {
        size_t need, a;
        char *p;

        if (extra > SIZE_MAX / 4 - b->size)
                return -ENOMEM;
        need = b->size + extra;
        if (need <= b->allocated)
                return 0;
        a = MAX(need, MAX(b->allocated * 2, (size_t) 4096));
        p = realloc(b->data, a);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = a;
        return 0;
}

static int buffer_append(Buffer *b, const void *data, size_t n) {
        int r = buffer_reserve(b, n);
        if (r < 0)
                return r;
        memcpy(b->data + b->size, data, n);
        b->size += n;
        return 0;
}

struct Journal {
        char *path;             /* "DIR/journal", for messages */
        int dir_fd;             /* holds the flock() */
        int fd;
        uint64_t size;
        size_t n_records;
        bool dirty_tail;        /* a failed append could not be cut off again */
        bool dir_unsynced;      /* a compaction's rename is not known to be durable */
        /* While journal_compact() runs: */
        int compact_fd;
        Buffer compact_buf;
        uint64_t compact_size;  /* bytes written to compact_fd so far */
        size_t compact_n;
        int compact_error;      /* first failure of journal_compact_add() */
};

typedef enum Key {
        KEY_JOB,
        KEY_ENV,
        KEY_ID,
        KEY_OLD,
        KEY_NAME,
        KEY_AT,         /* the time keys come last, see key_is_time() */
        KEY_CREATED,
        KEY_EXPIRES,
        KEY_GRACE,
        _KEY_MAX,
} Key;

#define K(k) (1U << (k))

static const struct {
        const char *name;
        size_t offset;  /* of the field in JournalRecord */
} keys[_KEY_MAX] = {
        [KEY_JOB]     = { "job",     offsetof(JournalRecord, job) },
        [KEY_ENV]     = { "env",     offsetof(JournalRecord, env) },
        [KEY_ID]      = { "id",      offsetof(JournalRecord, id) },
        [KEY_OLD]     = { "old",     offsetof(JournalRecord, old_id) },
        [KEY_NAME]    = { "name",    offsetof(JournalRecord, name) },
        [KEY_AT]      = { "at",      offsetof(JournalRecord, at) },
        [KEY_CREATED] = { "created", offsetof(JournalRecord, created) },
        [KEY_EXPIRES] = { "expires", offsetof(JournalRecord, expires) },
        [KEY_GRACE]   = { "grace",   offsetof(JournalRecord, grace) },
};

static const struct {
        const char *name;
        unsigned required;
        unsigned optional;      /* an absent time is 0, an absent string NULL */
} types[_JOURNAL_TYPE_MAX] = {
        [JOURNAL_JOB]       = { "job",       K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_CREATE]    = { "create",    K(KEY_JOB) | K(KEY_ENV), K(KEY_OLD) | K(KEY_AT) },
        [JOURNAL_DELIVERED] = { "delivered", K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_OLD) | K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_ROTATED]   = { "rotated",   K(KEY_JOB) | K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_OLD) | K(KEY_CREATED) | K(KEY_EXPIRES) },
        [JOURNAL_RETIRE]    = { "retire",    K(KEY_ENV) | K(KEY_ID),
                                             K(KEY_JOB) | K(KEY_AT) | K(KEY_GRACE) },
        [JOURNAL_REVOKED]   = { "revoked",   K(KEY_ENV) | K(KEY_ID), K(KEY_AT) },
        [JOURNAL_DELETED]   = { "deleted",   K(KEY_ENV) | K(KEY_ID), 0 },
        [JOURNAL_SCAN]      = { "scan",      K(KEY_JOB) | K(KEY_ENV) | K(KEY_NAME), K(KEY_AT) },
        [JOURNAL_SCANNED]   = { "scanned",   K(KEY_JOB) | K(KEY_ENV), 0 },
        [JOURNAL_FORGET]    = { "forget",    K(KEY_JOB), 0 },
};

const char *journal_type_to_string(JournalType t) {
        if ((unsigned) t >= _JOURNAL_TYPE_MAX)
                return NULL;
        return types[t].name;
}

static bool key_is_time(Key k) {
        return k >= KEY_AT;
}

static const char *record_string(const JournalRecord *r, Key k) {
        return *(const char * const *) ((const uint8_t *) r + keys[k].offset);
}

static usec_t record_time(const JournalRecord *r, Key k) {
        return *(const usec_t *) ((const uint8_t *) r + keys[k].offset);
}

static void record_set_string(JournalRecord *r, Key k, const char *s) {
        *(const char **) ((uint8_t *) r + keys[k].offset) = s;
}

static void record_set_time(JournalRecord *r, Key k, usec_t t) {
        *(usec_t *) ((uint8_t *) r + keys[k].offset) = t;
}

static bool record_has(const JournalRecord *r, Key k) {
        return key_is_time(k) ? record_time(r, k) != 0 : record_string(r, k) != NULL;
}

/* The one definition of a valid record, for writing and for replay alike, so that
 * nothing gets written that replay would refuse. */
static int record_check(const JournalRecord *r, char *err, size_t err_size) {
        unsigned allowed;

        if ((unsigned) r->type >= _JOURNAL_TYPE_MAX) {
                snprintf(err, err_size, "unknown record type %d", (int) r->type);
                return -EINVAL;
        }
        allowed = types[r->type].required | types[r->type].optional;
        for (Key k = 0; k < _KEY_MAX; k++) {
                bool has = record_has(r, k);

                if (!has && (types[r->type].required & K(k))) {
                        snprintf(err, err_size, "%s record without %s=", types[r->type].name,
                                 keys[k].name);
                        return -EINVAL;
                }
                if (has && !(allowed & K(k))) {
                        snprintf(err, err_size, "%s= not allowed in a %s record", keys[k].name,
                                 types[r->type].name);
                        return -EINVAL;
                }
        }
        return 0;
}

static bool byte_needs_escape(uint8_t c) {
        return c < 0x21 || c > 0x7e || c == '%' || c == '=';
}

static void write_hex32(char *p, uint32_t v) {
        static const char hex[] = "0123456789abcdef";

        for (int i = 7; i >= 0; i--, v >>= 4)
                p[i] = hex[v & 0xf];
}

/* Appends one complete line. -E2BIG if it would exceed JOURNAL_LINE_MAX; the buffer is
 * unchanged on failure. The record must have passed record_check(). */
static int serialize_record(Buffer *b, const JournalRecord *r) {
        static const char hex[] = "0123456789ABCDEF";
        size_t need = 9 + strlen(types[r->type].name) + 1, start = b->size, payload;
        char *p, *line;
        int k;

        for (Key key = 0; key < _KEY_MAX; key++) {
                if (!record_has(r, key))
                        continue;
                need += 1 + strlen(keys[key].name) + 1;
                if (key_is_time(key))
                        need += 20;
                else {
                        size_t l = strlen(record_string(r, key));
                        if (l >= JOURNAL_LINE_MAX)
                                return -E2BIG;
                        need += 3 * l;
                }
        }
        k = buffer_reserve(b, need);
        if (k < 0)
                return k;

        line = b->data + start;
        p = stpcpy(line + 9, types[r->type].name);
        for (Key key = 0; key < _KEY_MAX; key++) {
                if (!record_has(r, key))
                        continue;
                *p++ = ' ';
                p = stpcpy(p, keys[key].name);
                *p++ = '=';
                if (key_is_time(key)) {
                        usec_t t = record_time(r, key);
                        if (t == USEC_INFINITY)
                                p = stpcpy(p, "never");
                        else
                                p += sprintf(p, "%" PRIu64, t);
                        continue;
                }
                for (const uint8_t *s = (const uint8_t *) record_string(r, key); *s; s++)
                        if (byte_needs_escape(*s)) {
                                *p++ = '%';
                                *p++ = hex[*s >> 4];
                                *p++ = hex[*s & 0xf];
                        } else
                                *p++ = (char) *s;
        }
        payload = (size_t) (p - (line + 9));
        if (9 + payload + 1 > JOURNAL_LINE_MAX)
                return -E2BIG;
        write_hex32(line, crc32_ieee(line + 9, payload));
        line[8] = ' ';
        *p++ = '\n';
        b->size = (size_t) (p - b->data);
        return 0;
}

/* These run for every field on start-up: compare the first byte before anything else. */
static Key key_from_string(const char *s, size_t n) {
        for (Key k = 0; k < _KEY_MAX; k++)
                if (keys[k].name[0] == s[0] && strlen(keys[k].name) == n && memcmp(keys[k].name, s, n) == 0)
                        return k;
        return _KEY_MAX;
}

static JournalType type_from_string(const char *s, size_t n) {
        for (JournalType t = 0; t < _JOURNAL_TYPE_MAX; t++)
                if (types[t].name[0] == s[0] && strlen(types[t].name) == n && memcmp(types[t].name, s, n) == 0)
                        return t;
        return _JOURNAL_TYPE_MAX;
}

typedef enum LineState {
        LINE_VALID,
        LINE_BROKEN,    /* no matching checksum: could be a torn write */
        LINE_INVALID,   /* checksum matches but the content is wrong: never torn */
} LineState;

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Whether line (without '\n') starts with 8 lowercase hex digits and a space and the
 * checksum matches the rest. */
static LineState line_check_crc(const char *line, size_t len, const char **reason) {
        uint32_t crc = 0;

        if (len < 9 || line[8] != ' ') {
                *reason = "malformed record (no checksum)";
                return LINE_BROKEN;
        }
        for (size_t i = 0; i < 8; i++) {
                int d = unhex(line[i]);
                if (d < 0 || (line[i] >= 'A' && line[i] <= 'F')) {
                        *reason = "malformed record (no checksum)";
                        return LINE_BROKEN;
                }
                crc = crc << 4 | (uint32_t) d;
        }
        if (crc != crc32_ieee(line + 9, len - 9)) {
                *reason = "checksum mismatch";
                return LINE_BROKEN;
        }
        return LINE_VALID;
}

static int parse_time(const char *s, size_t n, usec_t *ret) {
        uint64_t v = 0;

        if (n == 5 && memcmp(s, "never", 5) == 0) {
                *ret = USEC_INFINITY;
                return 0;
        }
        if (n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                unsigned d;

                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                d = (unsigned) (s[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}

/* Decodes s[0..n) in place and NUL-terminates it, which overwrites at most s[n]. */
static int unescape(char *s, size_t n) {
        char *o = s;


        for (size_t i = 0; i < n; i++) {
                int hi, lo;

                if (s[i] == '=')
                        return -EINVAL;
                if (s[i] != '%') {
                        *o++ = s[i];
                        continue;
                }
                if (n - i < 3 || (hi = unhex(s[i + 1])) < 0 || (lo = unhex(s[i + 2])) < 0 ||
                    (hi == 0 && lo == 0))
                        return -EINVAL;
                *o++ = (char) (hi << 4 | lo);
                i += 2;
        }
        *o = 0;
        return 0;
}

/* Parses one line, line[len] being its '\n'. String values are decoded in place (each
 * NUL-terminated where its separator was), so the line is changed once the checksum
 * matched. On failure err says what is wrong. */
static LineState parse_record(char *line, size_t len, JournalRecord *ret, char *err, size_t err_size) {
        JournalRecord rec = { .type = _JOURNAL_TYPE_MAX };
        char *end = line + len;
        const char *reason;
        unsigned seen = 0, allowed = 0;
        LineState s;

        s = line_check_crc(line, len, &reason);
        if (s != LINE_VALID) {
                snprintf(err, err_size, "%s", reason);
                return s;
        }
        if (len + 1 > JOURNAL_LINE_MAX) {
                snprintf(err, err_size, "record too long (%zu bytes, at most %d)", len + 1,
                         JOURNAL_LINE_MAX);
                return LINE_INVALID;
        }
        for (const char *p = line + 9; p < end; p++)
                if ((uint8_t) *p < 0x20 || (uint8_t) *p > 0x7e) {
                        snprintf(err, err_size, "invalid byte 0x%02x", (unsigned) (uint8_t) *p);
                        return LINE_INVALID;
                }

        /* Fields separated by single spaces: the type, then key=value. */
        for (char *f = line + 9, *fe; f; f = fe < end ? fe + 1 : NULL) {
                char *eq;
                size_t flen;
                Key k;

                fe = memchr(f, ' ', (size_t) (end - f)); /* before the previous value's NUL lands on it */
                if (!fe)
                        fe = end;
                flen = (size_t) (fe - f);
                if (flen == 0) {
                        snprintf(err, err_size, "empty field");
                        return LINE_INVALID;
                }
                if (rec.type == _JOURNAL_TYPE_MAX) {
                        rec.type = type_from_string(f, flen);
                        if (rec.type == _JOURNAL_TYPE_MAX) {
                                snprintf(err, err_size, "unknown record type '%.*s'",
                                         (int) MIN(flen, (size_t) 32), f);
                                return LINE_INVALID;
                        }
                        allowed = types[rec.type].required | types[rec.type].optional;
                        continue;
                }

                eq = memchr(f, '=', flen);
                if (!eq) {
                        snprintf(err, err_size, "field '%.*s' without '='", (int) MIN(flen, (size_t) 32), f);
                        return LINE_INVALID;
                }
                k = key_from_string(f, (size_t) (eq - f));
                if (k == _KEY_MAX) {
                        snprintf(err, err_size, "unknown key '%.*s'", (int) MIN((size_t) (eq - f), (size_t) 32), f);
                        return LINE_INVALID;
                }
                if (seen & K(k)) {
                        snprintf(err, err_size, "duplicate key %s=", keys[k].name);
                        return LINE_INVALID;
                }
                seen |= K(k);
                if (!(allowed & K(k))) {
                        snprintf(err, err_size, "%s= not allowed in a %s record", keys[k].name,
                                 types[rec.type].name);
                        return LINE_INVALID;
                }
                eq++;
                if (key_is_time(k)) {
                        usec_t t;
                        if (parse_time(eq, (size_t) (fe - eq), &t) < 0) {
                                snprintf(err, err_size, "bad number in %s=", keys[k].name);
                                return LINE_INVALID;
                        }
                        record_set_time(&rec, k, t);
                } else {
                        record_set_string(&rec, k, eq);
                        if (unescape(eq, (size_t) (fe - eq)) < 0) {
                                snprintf(err, err_size, "bad escape in %s=", keys[k].name);
                                return LINE_INVALID;
                        }
                }
        }
        if (record_check(&rec, err, err_size) < 0)
                return LINE_INVALID;
        *ret = rec;
        return LINE_VALID;
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t offset) {
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t k = pwrite(fd, p, MIN(n, (size_t) SSIZE_MAX), (off_t) offset);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                p += k;
                n -= (size_t) k;
                offset += (uint64_t) k;
        }
        return 0;
}

static int read_all(int fd, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, allocated;
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > JOURNAL_FILE_MAX)
                return -EFBIG;
        allocated = (size_t) st.st_size + 4096; /* room to see EOF without growing */
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (size == allocated) {
                        char *p;
                        if (allocated > JOURNAL_FILE_MAX)
                                return -EFBIG;
                        p = realloc(buf, allocated * 2);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        allocated *= 2;
                }
                k = pread(fd, buf + size, allocated - size, (off_t) size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

static int set_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int set_error(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;

        if (!ret_error)
                return r;
        free(*ret_error);
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return r;
}

/* A file holding nothing but a part of the header, perhaps followed by NULs: it was being
 * created when the machine went down; no record was ever written to it. */
static bool journal_is_unwritten(const char *data, size_t size) {
        const size_t hlen = strlen(JOURNAL_HEADER);
        size_t i = 0;

        while (i < size && i < hlen && data[i] == JOURNAL_HEADER[i])
                i++;
        if (i == hlen)
                return false;
        for (; i < size; i++)
                if (data[i] != 0)
                        return false;
        return true;
}

static int journal_check_header(Journal *j, const char *data, size_t size, char **ret_error) {
        const size_t hlen = strlen(JOURNAL_HEADER), plen = strlen(JOURNAL_HEADER_PREFIX);
        char version[33];
        size_t n = 0;

        if (size >= hlen && memcmp(data, JOURNAL_HEADER, hlen) == 0)
                return 0;
        if (size < plen || memcmp(data, JOURNAL_HEADER_PREFIX, plen) != 0)
                return set_error(ret_error, -EBADMSG, "%s: offset 0: not a dtrotated journal (bad header)",
                                 j->path);
        for (size_t i = plen; i < size && data[i] != '\n' && n < sizeof(version) - 1; i++)
                version[n++] = (uint8_t) data[i] >= 0x20 && (uint8_t) data[i] <= 0x7e ? data[i] : '?';
        version[n] = 0;
        return set_error(ret_error, -EBADMSG, "%s: offset 0: unsupported journal version '%s'",
                         j->path, version);
}

typedef struct Entry {
        JournalRecord record;
        size_t offset;
} Entry;

typedef struct Parsed {
        Entry *entries;
        size_t n;
        size_t end;     /* end of the last good record: < size when the tail is torn */
} Parsed;

static void parsed_done(Parsed *p) {
        free(p->entries);
        *p = (Parsed) {};
}

/* Parses and checks all records in data[start..size), in one pass; the records point
 * into data, which is changed (decoded in place). Returns 0 (the tail may be torn, see
 * p->end), or -EBADMSG with *ret_error set. */
static int journal_parse(Journal *j, char *data, size_t size, size_t start, Parsed *p, char **ret_error) {
        size_t off = start, allocated = 0;
        char err[160];

        while (off < size) {
                char *nl = memchr(data + off, '\n', size - off);
                JournalRecord rec;
                LineState s;

                if (!nl) {
                        snprintf(err, sizeof(err), "incomplete record (no newline)");
                        s = LINE_BROKEN;
                } else
                        s = parse_record(data + off, (size_t) (nl - (data + off)), &rec, err, sizeof(err));
                if (s == LINE_INVALID)
                        return set_error(ret_error, -EBADMSG, "%s: offset %zu: %s", j->path, off, err);
                if (s == LINE_BROKEN) {
                        /* Torn, unless an intact line follows. */
                        for (const char *l = nl ? nl + 1 : data + size, *q; l < data + size; l = q + 1) {
                                const char *reason;

                                q = memchr(l, '\n', (size_t) (data + size - l));
                                if (!q)
                                        break;
                                if (line_check_crc(l, (size_t) (q - l), &reason) == LINE_VALID)
                                        return set_error(ret_error, -EBADMSG, "%s: offset %zu: %s",
                                                         j->path, off, err);
                        }
                        break;
                }
                if (p->n == allocated) {
                        Entry *e;

                        allocated = MAX(allocated * 2, (size_t) 64);
                        e = reallocarray(p->entries, allocated, sizeof(Entry));
                        if (!e)
                                return -ENOMEM;
                        p->entries = e;
                }
                p->entries[p->n++] = (Entry) { .record = rec, .offset = off };
                off = (size_t) (nl + 1 - data);
        }
        p->end = off;
        return 0;
}

/* Writes the header into an empty (or never completed) journal. */
static int journal_init(Journal *j, size_t old_size, char **ret_error) {
        int r;

        if (old_size > 0) {
                log_warning("%s: offset 0: incomplete header (crash while creating the journal), writing it afresh",
                            j->path);
                if (ftruncate(j->fd, 0) < 0)
                        return set_error(ret_error, -errno, "%s: cannot truncate: %m", j->path);
        }
        r = pwrite_all(j->fd, JOURNAL_HEADER, strlen(JOURNAL_HEADER), 0);
        if (r >= 0 && fsync(j->fd) < 0)
                r = -errno;
        if (r >= 0 && fsync(j->dir_fd) < 0)
                r = -errno;
        if (r < 0)
                return set_error(ret_error, r, "%s: cannot write header: %s", j->path, strerror(-r));
        j->size = strlen(JOURNAL_HEADER);
        j->n_records = 0;
        return 0;
}

static int journal_open_file(Journal *j, const char *dir, char **ret_error) {
        j->fd = openat(j->dir_fd, "journal", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (j->fd >= 0)
                return 0;
        if (errno != ENOENT)
                return set_error(ret_error, -errno, "%s: cannot open: %m", j->path);
        /* journal.new is written and renamed over journal; one without the other means
         * someone removed journal, and journal.new may be the only (perhaps partial) copy
         * of the state. Do not throw it away. */
        if (faccessat(j->dir_fd, "journal.new", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return set_error(ret_error, -ENOENT,
                                 "%s: missing, but %s/journal.new exists: refusing to start afresh "
                                 "(remove journal.new to do so)", j->path, dir);
        j->fd = openat(j->dir_fd, "journal", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (j->fd < 0)
                return set_error(ret_error, -errno, "%s: cannot create: %m", j->path);
        return 0;
}

int journal_open(const char *dir, journal_replay_t replay, void *userdata, Journal **ret,
                 char **ret_error) {
        _cleanup_(journal_closep) Journal *j = NULL;
        _cleanup_free_ char *data = NULL;
        _cleanup_(parsed_done) Parsed p = {};
        const size_t hlen = strlen(JOURNAL_HEADER);
        size_t size = 0, dlen;
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (!dir || !*dir || !ret)
                return -EINVAL;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->dir_fd = j->fd = j->compact_fd = -1;
        dlen = strlen(dir);
        while (dlen > 1 && dir[dlen - 1] == '/')
                dlen--;
        j->path = strdup_printf("%.*s/journal", (int) dlen, dir);
        if (!j->path)
                return -ENOMEM;

        if (mkdir(dir, 0700) >= 0) {
                /* Make the new directory itself durable, or all of it could vanish. */
                _cleanup_free_ char *d = strndup(dir, dlen);
                if (!d)
                        return -ENOMEM;
                r = fsync_parent_dir(d);
                if (r < 0)
                        return set_error(ret_error, r, "%s: cannot sync the parent directory: %s", dir,
                                         strerror(-r));
        } else if (errno != EEXIST)
                return set_error(ret_error, -errno, "%s: cannot create directory: %m", dir);
        j->dir_fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (j->dir_fd < 0)
                return set_error(ret_error, -errno, "%s: cannot open directory: %m", dir);
        if (flock(j->dir_fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno == EWOULDBLOCK)
                        return set_error(ret_error, -EBUSY, "%s: locked by another dtrotated instance", dir);
                return set_error(ret_error, -errno, "%s: cannot lock: %m", dir);
        }

        r = journal_open_file(j, dir, ret_error);
        if (r < 0)
                return r;

        if (unlinkat(j->dir_fd, "journal.new", 0) >= 0)
                log_warning("%s/journal.new: removed the leftover of an interrupted compaction", dir);
        else if (errno != ENOENT)
                return set_error(ret_error, -errno, "%s/journal.new: cannot remove leftover: %m", dir);

        r = read_all(j->fd, &data, &size);
        if (r == -EBADFD)
                return set_error(ret_error, -EBADMSG, "%s: not a regular file", j->path);
        if (r < 0)
                return set_error(ret_error, r, "%s: cannot read: %s", j->path, strerror(-r));

        if (journal_is_unwritten(data, size)) {
                r = journal_init(j, size, ret_error);
                if (r < 0)
                        return r;
                *ret = TAKE_PTR(j);
                return 0;
        }

        r = journal_check_header(j, data, size, ret_error);
        if (r < 0)
                return r;
        r = journal_parse(j, data, size, hlen, &p, ret_error);
        if (r == -ENOMEM)
                return set_error(ret_error, r, "%s: out of memory", j->path);
        if (r < 0)
                return r;
        if (p.end < size) {
                log_warning("%s: offset %zu: ignoring torn last record (crash during write)", j->path, p.end);
                if (ftruncate(j->fd, (off_t) p.end) < 0 || fsync(j->fd) < 0)
                        return set_error(ret_error, -errno, "%s: cannot cut off torn last record: %m", j->path);
        }
        for (size_t i = 0; replay && i < p.n; i++) {
                r = replay(&p.entries[i].record, userdata);
                if (r < 0)
                        return set_error(ret_error, r, "%s: offset %zu: replaying %s record failed: %s",
                                         j->path, p.entries[i].offset, types[p.entries[i].record.type].name,
                                         strerror(-r));
        }

        j->size = p.end;
        j->n_records = p.n;
        *ret = TAKE_PTR(j);
        return 0;
}

Journal *journal_close(Journal *j) {
        if (!j)
                return NULL;
        if (j->compact_fd >= 0)
                close(j->compact_fd);
        buffer_done(&j->compact_buf);
        if (j->fd >= 0)
                close(j->fd);
        if (j->dir_fd >= 0)
                close(j->dir_fd); /* releases the lock */
        free(j->path);
        free(j);
        return NULL;
}

static int serialize_checked(Buffer *b, const JournalRecord *r) {
        char err[160];

        if (record_check(r, err, sizeof(err)) < 0)
                return log_error_errno(-EINVAL, "journal: refusing to write an invalid record: %s", err);
        return serialize_record(b, r);
}

int journal_append(Journal *j, const JournalRecord *records, size_t n) {
        _cleanup_(buffer_done) Buffer b = {};
        int r;

        if (!j || (n > 0 && !records))
                return -EINVAL;
        if (j->compact_fd >= 0)
                return -EBUSY; /* it would be lost with the old file */
        if (n == 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                r = serialize_checked(&b, &records[i]);
                if (r < 0)
                        return r;
        }

        if (j->dir_unsynced) {
                if (fsync(j->dir_fd) < 0)
                        return -errno;
                j->dir_unsynced = false;
        }
        if (j->dirty_tail) {
                if (ftruncate(j->fd, (off_t) j->size) < 0)
                        return -errno;
                j->dirty_tail = false;
        }

        r = pwrite_all(j->fd, b.data, b.size, j->size);
        if (r >= 0 && fdatasync(j->fd) < 0)
                r = -errno;
        if (r < 0) {
                /* Cut off whatever made it, so that the file ends with a complete record. */
                if (ftruncate(j->fd, (off_t) j->size) < 0 || fdatasync(j->fd) < 0)
                        j->dirty_tail = true;
                return r;
        }
        j->size += b.size;
        j->n_records += n;
        return 0;
}

size_t journal_n_records(Journal *j) {
        return j ? j->n_records : 0;
}

uint64_t journal_size(Journal *j) {
        return j ? j->size : 0;
}

static int compact_flush(Journal *j) {
        int r = pwrite_all(j->compact_fd, j->compact_buf.data, j->compact_buf.size, j->compact_size);
        if (r < 0)
                return r;
        j->compact_size += j->compact_buf.size;
        j->compact_buf.size = 0;
        return 0;
}

int journal_compact_add(Journal *j, const JournalRecord *r) {
        int k;

        if (!j || !r || j->compact_fd < 0)
                return -EINVAL;
        if (j->compact_error < 0)
                return j->compact_error;
        k = serialize_checked(&j->compact_buf, r);
        if (k >= 0 && j->compact_buf.size >= COMPACT_CHUNK)
                k = compact_flush(j);
        if (k < 0) {
                j->compact_error = k; /* fails the compaction even if emit ignores it */
                return k;
        }
        j->compact_n++;
        return 0;
}

int journal_compact(Journal *j, journal_emit_t emit, void *userdata) {
        _cleanup_close_ int fd = -1;
        uint64_t size;
        size_t n;
        int r;

        if (!j || !emit)
                return -EINVAL;
        if (j->compact_fd >= 0)
                return -EBUSY;

        fd = openat(j->dir_fd, "journal.new", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        j->compact_fd = fd;
        j->compact_size = 0;
        j->compact_n = 0;
        j->compact_error = 0;
        j->compact_buf.size = 0;

        r = buffer_append(&j->compact_buf, JOURNAL_HEADER, strlen(JOURNAL_HEADER));
        if (r >= 0)
                r = emit(j, userdata);
        if (r >= 0)
                r = j->compact_error;
        if (r >= 0)
                r = compact_flush(j);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        size = j->compact_size;
        n = j->compact_n;
        j->compact_fd = -1;
        buffer_done(&j->compact_buf);
        if (r >= 0 && renameat(j->dir_fd, "journal.new", j->dir_fd, "journal") < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(j->dir_fd, "journal.new", 0);
                return r;
        }

        /* journal.new is the journal now: switch at once, records appended to the old,
         * unlinked file would be lost. */
        close(j->fd);
        j->fd = TAKE_FD(fd);
        j->size = size;
        j->n_records = n;
        j->dirty_tail = false;
        if (fsync(j->dir_fd) < 0) {
                /* The rename may not be durable: no append is acknowledged before it is. */
                j->dir_unsynced = true;
                return -errno;
        }
        j->dir_unsynced = false;
        return 0;
}
