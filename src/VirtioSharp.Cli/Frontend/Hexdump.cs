using System.Text;

namespace VirtioSharp.Cli.Frontend;

/// <summary>Canonical hex+ASCII dump (16 bytes a line); runs of identical lines collapse into one '*'.</summary>
internal sealed class Hexdump(TextWriter output)
{
    private readonly byte[] _previous = new byte[16];
    private bool _havePrevious;
    private bool _squeezing;

    /// <summary>Dumps <paramref name="data"/>, which starts at disk offset <paramref name="offset"/> (a multiple of 16).</summary>
    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        var line = new StringBuilder(80);
        for (var i = 0; i < data.Length; i += 16)
        {
            var row = data.Slice(i, Math.Min(16, data.Length - i));
            if (row.Length == 16 && _havePrevious && row.SequenceEqual(_previous))
            {
                if (!_squeezing)
                    output.WriteLine("*");
                _squeezing = true;
                continue;
            }
            _squeezing = false;
            row.CopyTo(_previous);
            _havePrevious = row.Length == 16;
            line.Clear();
            line.Append((offset + (ulong)i).ToString("x8"));
            line.Append("  ");
            for (var j = 0; j < 16; j++)
            {
                line.Append(j < row.Length ? row[j].ToString("x2") : "  ");
                line.Append(j == 7 ? "  " : " ");
            }
            line.Append(" |");
            foreach (var b in row)
                line.Append(b is >= 0x20 and < 0x7f ? (char)b : '.');
            line.Append('|');
            output.WriteLine(line);
        }
    }

    /// <summary>Closes the dump with the end offset, as hexdump -C does.</summary>
    public void Finish(ulong endOffset) => output.WriteLine(endOffset.ToString("x8"));
}
