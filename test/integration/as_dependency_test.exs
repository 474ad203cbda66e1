defmodule FLAMEK8sBackend.AsDependencyTest do
  # The Mix compiler must also build and install the NIF when this project is a path
  # dependency of another mix project (the way users consume it), with no hex anywhere.
  use ExUnit.Case, async: true

  @moduletag :integration

  @moduletag :tmp_dir
  @moduletag timeout: 600_000

  test "a project depending on flame_k8s_backend by path compiles it and loads the NIF", %{
    tmp_dir: dir
  } do
    root = Path.expand("../..", __DIR__)
    File.mkdir_p!(Path.join(dir, "lib"))

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule UserApp.MixProject do
      use Mix.Project

      def project do
        [app: :user_app, version: "0.1.0", deps: [{:flame_k8s_backend, path: #{inspect(root)}}]]
      end
    end
    """)

    script = """
    :ok = FLAMEK8sBackend.Native.noop()
    {:ok, kube} = FLAMEK8sBackend.Kube.connect(url: "https://127.0.0.1:1", token: "t")
    {:error, {:connect, _}} = FLAMEK8sBackend.Kube.get_pod(kube, "default", "p")
    IO.puts("NIF OK from " <> FLAMEK8sBackend.Native.library_path())
    """

    # The working tree's source, never a released precompiled NIF.
    env = [
      {"MIX_ENV", "prod"},
      {"FLAME_K8S_BUILD", "1"},
      {"CARGO_TARGET_DIR", cargo_target_dir(root)}
    ]

    {output, status} =
      System.cmd("mix", ["run", "-e", script], cd: dir, env: env, stderr_to_stdout: true)

    assert status == 0, output

    assert output =~
             "NIF OK from #{dir}/_build/prod/lib/flame_k8s_backend/priv/native/libflame_k8s_native"
  end

  # Share the cargo build cache: a cold build of the NIF's dependencies takes minutes.
  defp cargo_target_dir(root) do
    System.get_env("CARGO_TARGET_DIR") || Path.join(root, "_build/cargo")
  end
end
